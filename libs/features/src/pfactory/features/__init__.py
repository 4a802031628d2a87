"""Feature partitions: layout, markers and readers shared by the services that read features."""
