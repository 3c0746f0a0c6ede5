"""MariaDB client/server protocol command codes (the first byte of a command packet): the
one list, for the client side (agent/mariadb/dump_client.py) and the server side
(agent/serving/session.py)."""

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_PING = 0x0E
COM_BINLOG_DUMP = 0x12
COM_REGISTER_SLAVE = 0x15
