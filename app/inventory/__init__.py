"""The fleet catalogue: sites, racks, devices and the control paths that reach them."""
