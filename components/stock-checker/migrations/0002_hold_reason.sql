-- Why a check was rejected (`out_of_stock: <sku>`), so that it is answered the same way
-- when orders asks again.
ALTER TABLE stock_holds ADD COLUMN reason TEXT;
