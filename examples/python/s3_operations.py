#!/usr/local/bin/prefork-interp -U,python3
"""A script with heavy imports: list the S3 API operations matching a word.

Importing boto3 and building a client (which loads the service model) takes
a few hundred milliseconds; through prefork-interp that happens once, in the
server, and each call only does the lookup.  No network access or AWS
credentials are needed.

    ./s3_operations.py bucket          # through prefork-interp
    python3 s3_operations.py bucket    # directly, for comparison
"""
import sys
import time

started = time.monotonic()
import boto3  # noqa: E402

S3 = boto3.session.Session().client("s3", region_name="us-east-1")
OPERATIONS = S3.meta.service_model.operation_names
setup_seconds = time.monotonic() - started

import prefork_interp  # noqa: E402

prefork_interp.initialisation_complete()

word = sys.argv[1].lower() if len(sys.argv) > 1 else ""
matches = [name for name in OPERATIONS if word in name.lower()]
for name in matches:
    print(name)
print(f"{len(matches)} of {len(OPERATIONS)} S3 operations "
      f"(boto3 {boto3.__version__} loaded in {setup_seconds:.2f} s, once)", file=sys.stderr)
sys.exit(0 if matches else 1)
