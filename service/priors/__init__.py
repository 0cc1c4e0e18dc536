"""A patient's earlier studies, fetched from the PACS so that the trend starts early."""
