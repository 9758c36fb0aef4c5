// Package greet is the service's one module dependency, served from a file:// module proxy made on this host.
package greet

// Hello returns the line the service prints for name.
func Hello(name string) string {
	return "hello, " + name + ", from a module dependency"
}
