"""One module per external system the gateway talks to."""
