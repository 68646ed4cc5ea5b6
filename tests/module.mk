# tests/: fixtures shared by the integration suites.
$(eval $(call kvf_test_program,kvf-testd,tests/integration/testd.c,common))
