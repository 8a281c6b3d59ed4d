from mamori.cli.main import app

app()
