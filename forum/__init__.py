"""forum: customers and employees co-create a company's services."""

__version__ = "0.1.0"
