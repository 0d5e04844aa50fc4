"""Pure parsers, one module per exchange, turning venue frames into normalized events (see ``common``)."""
