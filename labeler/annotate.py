"""Blueprint 'annotate' (being built)."""

from flask import Blueprint

bp = Blueprint("annotate", __name__)
