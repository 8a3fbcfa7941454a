"""Standard-library fakes of cloud services, for tests."""
