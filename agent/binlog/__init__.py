"""MariaDB binlog events as bytes, with no I/O of their own: event headers, CRCs and ROTATE
targets (`events`), binlog positions (`positions`), transactions grouped from events and
joined from stored records (`transactions`), the BINLOG_META record format (`meta`), and
binlog files read (`files`) and written (`writer`)."""
