"""The sparseinst toolkit: recipes, data, inference and the command line."""

from .inference import Predictor
from .recipe import RecipeError, load_recipe

__all__ = ["Predictor", "RecipeError", "load_recipe"]
