"""The guide's own programs (programs/) run against the local authority and endpoint."""
