"""Trading: strategy interface and the Cipher scalping strategy, broker, positions, risk, journal and summary."""
