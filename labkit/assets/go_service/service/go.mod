module labkit.example/service

go 1.19

require labkit.example/greet v1.0.0
