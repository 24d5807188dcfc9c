-- The All* queries read each view in this order, a page at a time.
CREATE INDEX issuers_list_order ON issuers (created_at, position);
CREATE INDEX investors_list_order ON investors (created_at, position);
CREATE INDEX invoices_list_order ON invoices (created_at, position);
