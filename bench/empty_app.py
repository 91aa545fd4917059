"""The baseline: an empty cdk8s App synthesized by a fresh Python process."""

import sys

import cdk8s

cdk8s.App(outdir=sys.argv[1]).synth()
