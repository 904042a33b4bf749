"""ESPnet task classes of almtok."""
