"""The toolkit's trainers (FedMF, FCF, PFedRec, PersonalFR) as a Flower app (fedmf.flower)."""
