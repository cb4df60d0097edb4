"""Component tests: one esm component against real servers over real HTTP (moto, aiohttp, fakes)."""
