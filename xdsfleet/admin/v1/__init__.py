"""Generated from protos/xdsfleet/admin/v1/admin.proto by `make protos`: do not edit."""
