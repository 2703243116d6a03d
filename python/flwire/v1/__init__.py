# Generated from proto/flwire/v1 by codegen/generate.py. DO NOT EDIT!
# Change the .proto files and run `make gen`.
"""Generated Protobuf classes for package flwire.v1."""
