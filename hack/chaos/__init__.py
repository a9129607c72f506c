"""The chaos suite (issue 12): a seeded schedule of requests, cloud faults, operator
SIGKILLs, API server and etcd restarts and spot interruptions, measured from the
simulated clouds' own records. `make chaos`; docs/reliability.md."""
