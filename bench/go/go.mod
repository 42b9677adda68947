module alloctrace/benchgo

go 1.19
