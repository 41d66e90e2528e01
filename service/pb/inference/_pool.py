"""Private descriptor pool of the `inference` protos (written by proto/gen.py; see its docstring).

Other generated code (tritonclient's Triton protos) registers the same message names in protobuf's default pool,
which refuses duplicates: our modules add their files here instead, so both load in one process.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
