module labkit.example/greet

go 1.19
