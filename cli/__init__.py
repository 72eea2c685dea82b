"""The shardplan command line (installed as shardplan.cli)."""
