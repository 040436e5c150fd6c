-- Where the IMAP poller is in each folder it fetches from: the folder's UIDVALIDITY
-- and the last UID whose message was committed. A new UIDVALIDITY means the server
-- renumbered the folder: it is fetched again, and what is already here is recognised.
CREATE TABLE mailbox_positions (
    mailbox TEXT PRIMARY KEY,
    uid_validity BIGINT NOT NULL,
    last_uid BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
