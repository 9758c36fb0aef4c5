// The probe prints one tab-separated line per check: its name, "ok" or "failed", and what it got.
// tls: an HTTPS server on 127.0.0.1 inside this container, its certificate signed by a local CA, called with
// the system's trust store (Go reads /etc/ssl/certs). timezone: time.LoadLocation (Go reads /usr/share/zoneinfo).
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

func report(check string, detail string, err error) {
	if err != nil {
		fmt.Printf("%s\tfailed\t%s\n", check, strings.ReplaceAll(err.Error(), "\t", " "))
		return
	}
	fmt.Printf("%s\tok\t%s\n", check, detail)
}

func callTLS() (string, error) {
	certificate, err := tls.LoadX509KeyPair("/tls/server.crt", "/tls/server.key")
	if err != nil {
		return "", err
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer listener.Close()
	server := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello over tls") }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{certificate}},
	}
	go server.ServeTLS(listener, "", "")
	client := &http.Client{Timeout: 5 * time.Second}
	response, err := client.Get("https://" + listener.Addr().String() + "/")
	if err != nil {
		return "", err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	return response.Status + ": " + string(body), err
}

func lookUpZone() (string, error) {
	zone, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		return "", err
	}
	return "2026-07-01 12:00 UTC is " + time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC).In(zone).Format("15:04 MST") + " in Europe/Berlin", nil
}

func main() {
	detail, err := callTLS()
	report("tls", detail, err)
	detail, err = lookUpZone()
	report("timezone", detail, err)
}
