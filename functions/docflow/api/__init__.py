"""The REST API: one FastAPI app, served from Lambda through Mangum (handlers/api.py) and locally by
`docflow serve` (server.py) on the embedded stores with background workers."""
