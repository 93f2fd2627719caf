"""Rackhand site agent: the only code that speaks to devices (never imports `app`)."""
