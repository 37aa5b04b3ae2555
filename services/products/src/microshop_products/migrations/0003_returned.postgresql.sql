-- Reservations may end 'returned' (sold, then given back).
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
  CHECK (status IN ('reserved', 'committed', 'released', 'returned'));
