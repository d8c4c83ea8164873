"""The protocol layer: CyclesInstrumentor over both runcycles clients, and the aiohttp transport."""
