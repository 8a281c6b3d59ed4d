from mamori.cli.main import app

if __name__ == "__main__":  # also keeps worker processes (spawn) from running the CLI
    app()
