module alloctrace/goworkloads

go 1.19
