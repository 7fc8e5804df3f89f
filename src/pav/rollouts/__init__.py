"""Monte-Carlo progress estimates: the pure maths (`estimates`) and, later, the labelling job."""
