"""Chat: a line of text -> a kb action -> its events -> the narrative, one pipeline for every transport."""
