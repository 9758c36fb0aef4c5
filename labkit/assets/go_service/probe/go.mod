module labkit.example/probe

go 1.19
