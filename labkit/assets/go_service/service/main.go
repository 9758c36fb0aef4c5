package main

import (
	"fmt"

	"labkit.example/greet"
)

func main() {
	fmt.Println(greet.Hello("modules"))
}
