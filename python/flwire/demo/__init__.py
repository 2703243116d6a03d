"""What `flwire demo` runs."""
