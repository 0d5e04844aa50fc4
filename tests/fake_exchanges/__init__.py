"""Local servers speaking each venue's documented frames, with scripted failures (see ``base``)."""
