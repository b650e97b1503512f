"""The JSON API: ``app`` builds it, ``reads`` and ``actions`` are its endpoints, ``common`` what
they share, ``serving`` the server ``python -m enrich serve`` runs."""
