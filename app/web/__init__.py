"""What a browser loads from Rackhand: the API docs page and the front-end files it needs."""
