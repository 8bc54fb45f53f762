-- The pool a machine is being made for, until its node joins (empty then,
-- and for machines made without a node). A machine still joining long
-- after it was made belongs to a node add that never finished (the process
-- died): healing destroys it.
ALTER TABLE iaas_machines ADD COLUMN joining TEXT NOT NULL DEFAULT '';
