"""`sparsebert report`: the paper's results table from run folders, importance and mask figures.

`table` reads run folders into a plain `Table`, `formats` renders it, `importance` and
`mask_figures` draw PNGs. Torch is imported only inside the functions that read tensors.
"""
