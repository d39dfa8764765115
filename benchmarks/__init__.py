"""Benchmarks that compare bert-jax with its peers; outside the library, which never imports them."""
