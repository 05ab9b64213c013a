"""Networks of the CRL family and what training them costs in memory."""
