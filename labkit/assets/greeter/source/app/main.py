from flask import Flask

from app.greeting import greet

app = Flask(__name__)


@app.get("/")
def index() -> str:
    """The front page."""
    return greet("container")
