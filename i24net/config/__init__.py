"""Configuration on disk: the network's home folder and the preset networks."""
