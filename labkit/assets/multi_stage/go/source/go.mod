module labkit.example/server

go 1.19
