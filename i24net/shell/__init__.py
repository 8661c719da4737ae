"""The asyncio shells around the sans-IO core: daemons, node hosts, control sockets, wiring."""
