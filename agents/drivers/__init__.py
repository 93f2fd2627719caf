"""Drivers: the only code that speaks to devices, one module per protocol."""
