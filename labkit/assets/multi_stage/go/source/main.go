package main

import (
	"fmt"
	"net/http"
	"os"
)

// A tiny web service; --check answers one request in-process and exits.
func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello from go") })
	if len(os.Args) > 1 && os.Args[1] == "--check" {
		fmt.Println("ok")
		return
	}
	http.ListenAndServe(":8080", nil)
}
