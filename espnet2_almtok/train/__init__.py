"""Training loops of almtok (ESPnet's trainers, subclassed where they need fixing)."""
